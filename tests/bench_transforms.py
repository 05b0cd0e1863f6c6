"""The transform figure alone (``python -m tests.bench_transforms [pages]``): an alias of
``python -m tests.bench.transform``; ``make bench`` reports it as its ``transform`` group."""

from tests.bench.transform import main

if __name__ == "__main__":
    main()
