"""Training under Hugging Face Accelerate: `mmimdb-dist train`.
"""
