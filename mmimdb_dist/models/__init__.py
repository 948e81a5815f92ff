"""Text encoders, vision encoders and fusion heads, all built from `ModelConfig` by the registry
(`models.registry.build_model`). The config section is `schema/model.py`.

The package itself imports nothing, so a torch-free module below it (`models.prefetch`,
`models.preprocess`) can be imported without torch.
"""
