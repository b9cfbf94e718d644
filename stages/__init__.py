"""Built-in stages and input readers.  Importing this package registers them by name."""

from stages import crawl, dedup, extract, language, pii, quality, tabular, tokenize, url_filter, warc  # noqa: F401
