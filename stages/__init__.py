"""Built-in stages and input readers.  Importing this package registers them by name."""

from stages import dedup, extract, language, pii, quality, tabular, url_filter, warc  # noqa: F401
