"""One module per DP library, each behind the small contract of `base.Engine`."""
