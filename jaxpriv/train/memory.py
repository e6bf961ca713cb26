"""The micro-batch size from a memory budget, measured on XLA's plan of the compiled step.

The step's working memory (XLA's temporary buffers) grows with the micro-batch size, not with
the logical batch: micro-batches are summed one after another inside the step. So the largest
micro-batch whose step fits the budget is found by compiling the step for a few sizes.
"""

from collections.abc import Callable


def choose_microbatch_size(
    working_memory: Callable[[int], int], budget_bytes: int, largest: int
) -> int:
    """The largest power of two ``m <= largest`` with ``working_memory(m) <= budget_bytes``.

    ``working_memory(m)``: bytes the compiled step needs per device at micro-batch ``m``. It is
    measured at 1 and 2, extrapolated linearly, and checked (halving) at the chosen size: about
    three compilations. Raises ValueError when even a micro-batch of 1 does not fit.
    """
    fixed_plus_one = working_memory(1)
    if fixed_plus_one > budget_bytes:
        raise ValueError(
            f"the train step needs {fixed_plus_one / 2**20:.0f} MiB per device at micro-batch 1, "
            f"over the budget of {budget_bytes / 2**20:.0f} MiB; raise train.memory_budget_mb "
            "or use a smaller model"
        )
    if largest == 1:
        return 1
    per_example = max(working_memory(2) - fixed_plus_one, 1)
    estimate = 1 + (budget_bytes - fixed_plus_one) // per_example
    size = 1 << (min(estimate, largest).bit_length() - 1)  # power of two, rounded down
    while size > 2 and working_memory(size) > budget_bytes:
        size //= 2
    return size
