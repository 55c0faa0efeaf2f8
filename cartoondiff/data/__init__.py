"""Avatar data: the Cartoon Set reader, the memmap cache, the synthetic renderer, downloads."""
