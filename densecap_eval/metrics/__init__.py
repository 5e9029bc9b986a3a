"""Pure metric functions: numbers in, numbers out (no model, no I/O).

- `dci`: the reference's SCM (groups of 8, min/max bag pooling, first index of the maximum)
  and Neg (strict ``>``), plus the per-photo SCM variant.
- `retrieval`: image-to-text and text-to-image ranks and recall@k over a fixed gallery.
- `bootstrap`: percentile intervals resampling clusters (photos).
- `paired`: comparing two runs: a sign-flip permutation test over photos (clustered), the
  paired cluster bootstrap, and McNemar's test (which assumes independent examples).
- `length`: token-length and first-difference-position buckets.
"""
