

def test_every_registered_method_has_its_own_colour():
    from sfam_lite.methods import METHODS
    from sfam_lite.plotting import method_colours
    colours = method_colours()
    assert list(colours) == list(METHODS) and len(set(colours.values())) == len(METHODS)
