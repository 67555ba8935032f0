"""Where images come from (the published IDX data sets, an image folder, tensor files), how they are decoded,
and the prepared splits every later stage reads."""
