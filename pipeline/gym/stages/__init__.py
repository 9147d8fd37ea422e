"""The gym stages, in the order a run takes them: environment -> model -> train -> evaluate -> export."""
