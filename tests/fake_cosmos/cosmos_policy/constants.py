"""Stand-in for cosmos_policy/constants.py: the real module picks these from sys.argv; LIBERO's values."""

ACTION_DIM = 7
PROPRIO_DIM = 9
