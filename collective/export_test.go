package collective

// SetSmallReduce sets the largest allreduce (bytes per rank) done by
// direct exchange; 0 makes every allreduce of at least Size elements use
// the ring.
func SetSmallReduce(c *Comm, bytes int) { c.smallReduce = bytes }
