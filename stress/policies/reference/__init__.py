"""The built-in reference model: a small joint policy / world model / value network with Cosmos Policy's
contract (action chunk + predicted future images and proprio + value, a flow-matching sampler with a
``num_denoising_steps`` knob, best-of-N planning), trained from scratch on a CPU (``stress train-reference``)."""
