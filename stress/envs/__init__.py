"""Simulator adapters. LIBERO is the first (stress.envs.libero)."""
