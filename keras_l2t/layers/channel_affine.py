"""`ChannelAffine`: y = x·scale + offset per channel (a source's own input convention)."""

import keras


@keras.saving.register_keras_serializable(package="keras_l2t")
class ChannelAffine(keras.layers.Layer):
    """y = x·scale + offset per channel: maps keras_l2t's normalised inputs to what a preset expects."""

    def __init__(self, scale, offset, **kwargs):
        super().__init__(**kwargs)
        self.scale = [float(s) for s in scale]
        self.offset = [float(o) for o in offset]

    def call(self, inputs):
        scale = keras.ops.convert_to_tensor(self.scale, inputs.dtype)
        offset = keras.ops.convert_to_tensor(self.offset, inputs.dtype)
        return inputs * scale + offset

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}
