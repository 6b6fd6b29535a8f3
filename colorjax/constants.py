"""Single source of truth for the Lab ranges and the model-side scaling of L and ab."""

# CIELAB ranges (D65 white). L is lightness in [0, 100]; a and b of sRGB colors stay inside
# about [-86.2, 98.3] x [-107.9, 94.5], so AB_MAX bounds every color a photo can hold.
L_MIN = 0.0
L_MAX = 100.0
AB_MAX = 110.0

# Model-side scaling. The network sees L / 100 in [0, 1] and predicts ab / 128 through a tanh, so
# the model output times AB_SCALE is ab in Lab units; the report's MSE is on ab / AB_SCALE.
# Raw L in [0, 100] (as some Keras versions of this network feed it) saturates the tanh under Flax's
# default init and Adam 1e-3 within 10 steps here (loss stuck at 0.82, gradients 0); L / 100 trains.
L_INPUT_SCALE = 1.0 / 100.0
AB_SCALE = 128.0

# Records store L and ab as 8-bit integers (see colorjax/records.py).
L_QUANT_STEP = L_MAX / 255.0  # L = uint8 * L_QUANT_STEP; worst-case error L_QUANT_STEP / 2
AB_QUANT_STEP = 1.0  # ab = int8 * AB_QUANT_STEP; worst-case error 0.5 inside [-128, 127]

# ab histogram grid (the color prior for a rebalanced loss): bins of 10 over [-110, 110].
AB_GRID_STEP = 10.0
AB_GRID_MIN = -110.0
AB_GRID_SIZE = 22

# Default training image size (the report's).
IMAGE_SIZE = 256
