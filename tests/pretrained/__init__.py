"""Test fixtures of *pretrained* models: each builder mirrors one published model's own
config and artifact layout (tokenizer kind, prompt format, preprocessor, file names),
scaled down to about a million parameters, and is built with the framework's own API."""
