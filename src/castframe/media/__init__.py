"""Images in and out: decoding with limits, the safe fetcher, storage and signed URLs."""
