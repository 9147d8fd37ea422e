"""The stages the driver runs in order: environment -> model -> train -> evaluate -> export."""
