"""The Hub side: model cards (`card`), publishing runs and the Space (`publish`, `publish_space`), and models
bundled inside the package (`bundle`). Training and evaluation never import it; the commands compose it."""
