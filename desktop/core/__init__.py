"""Qt-free core: state, staging, registries and the runtime supervisor."""
