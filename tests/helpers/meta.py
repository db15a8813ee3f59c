"""What stage meta's tests (tests/test_meta*.py) share."""

# what MetaModel.classifier adds to "lda": its shrinkage and class share, when not the defaults
REGULARISATION = r"( \((shrinkage [0-9.]+)?(, )?(class covariance [0-9.]+)?\))?"
