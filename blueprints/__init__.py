"""One Functions blueprint per feature; triggers stay thin and call into shared/."""
