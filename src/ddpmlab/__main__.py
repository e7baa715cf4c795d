"""``python -m ddpmlab`` (also what torchrun runs with ``-m ddpmlab``)."""

from ddpmlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
