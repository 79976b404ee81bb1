"""Online Decision Transformer (Zheng, Zhang, Grover 2022): offline pretraining, online fine-tuning on Brax."""
