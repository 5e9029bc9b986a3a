"""Pure metric functions: numbers in, numbers out (no model, no I/O).

- `dci`: the reference's SCM (groups of 8, min/max bag pooling, first index of the maximum)
  and Neg (strict ``>``), plus the per-photo SCM variant.
- `retrieval`: image-to-text and text-to-image ranks and recall@k over a fixed gallery.
- `bootstrap`: percentile intervals resampling clusters (photos).
- `paired`: exact McNemar test and a paired cluster bootstrap for comparing two runs.
- `length`: token-length and first-difference-position buckets.
"""
