"""The statistical core of the monitor: losses, the degradation test, multiplicity control, challenger check.

Everything here is a pure, vectorised function over arrays that hold the whole fleet, one row per stream,
padded with NaN where a stream has fewer values. No I/O, no state: the agent keeps reference buffers,
warm-up, cool-down and budgets and calls these functions once per tick.
"""
