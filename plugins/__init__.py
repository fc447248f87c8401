"""verifier_plugins: plugins shipped with the verifier (installed from the repository's
``plugins/`` folder under this import name, so as not to claim a generic top-level name).

Third-party abstract domains do not need to live here: any installed package can add
one through the ``verifier.domains`` entry-point group (see :mod:`verifier.domains`).
"""
