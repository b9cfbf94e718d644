"""Built-in stages and input readers.  Importing this package registers them by name."""

from stages import dedup, extract, language, pii, quality, tabular, tokenize, url_filter, warc  # noqa: F401
