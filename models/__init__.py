"""Keras networks: the policy and value models the pipeline trains and exports."""
