"""How stages reach bytes and weights: filesystems and URIs (``io``), the media access policy
(``paths``: allowed roots, what may be opened), model checkpoints
(``checkpoints``: where weights come from, sha256 pins) and loading them (``models``).

This layer sits below ``stages``: it imports neither ``pipeline`` nor Ray, only the standard
library, pyarrow and (lazily) the model libraries.
"""
