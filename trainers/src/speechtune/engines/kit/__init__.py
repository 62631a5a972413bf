"""What every engine shares: checkpoints and the training policies (seed, precision,
agreement across ranks, the best-checkpoint key).
Engines import the kit, never each other; the kit imports no engine and no runtime."""
