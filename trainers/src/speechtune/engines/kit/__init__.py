"""What every engine shares: checkpoints (and, next, the other training policies).
Engines import the kit, never each other; the kit imports no engine and no runtime."""
