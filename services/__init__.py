"""mtc model services: the shared serving kit (`core`) and one package per model service."""
