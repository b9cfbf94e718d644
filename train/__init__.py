"""train: a compact decoder-only GPT and its training: ``model`` (the network, logits out),
``data`` (token-shard loader with resumable state), ``pretrain`` (the training loop),
``checkpoint`` (atomic checkpoints, exact resume), ``parallel`` (DDP), ``generate`` (decoding
strategies with a KV cache), ``export`` (Hugging Face Llama folders) and ``cli``
(``winnow train|generate|export``)."""
