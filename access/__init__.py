"""How stages reach bytes and weights: filesystems and URIs (``io``), the media access policy
(``paths``: allowed roots, what may be opened) and model checkpoints (``models``).

This layer sits below ``stages``: it imports neither ``pipeline`` nor Ray, only the standard
library, pyarrow and (lazily) the model libraries.
"""
