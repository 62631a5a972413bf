"""kopf handlers: `registration` wires every one of them; the other modules hold the steps
each handler runs (one activity per module)."""
