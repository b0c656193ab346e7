

def test_every_registered_method_has_its_own_colour():
    from sfam_lite.methods import METHODS
    from sfam_lite.plotting import method_colours
    colours = method_colours()
    assert list(colours) == list(METHODS) and len(set(colours.values())) == len(METHODS)


def test_compare_methods_fits_the_text_column_with_one_colour_bar():
    """Seven columns of 1.6 in would be 11 in, shrunk in the book to 757 px and its text with it: the figure is
    drawn at most COLUMN_INCHES wide, every method titled at 10 pt, with one colour bar for all its maps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from sfam_lite.explainer import SFAM
    from sfam_lite.plotting import COLUMN_INCHES, compare_methods
    torch.manual_seed(0)
    images, boxes = torch.rand(4, 3, 16, 16), torch.tensor([[2.0, 2.0, 10.0, 12.0]]).repeat(4, 1)
    out = SFAM(None).explain_features(torch.rand(2, 5, 4, 4), torch.rand(2, 1, 5, 4, 4), size=(16, 16))
    names = ["SFAM", "RAM", "CG-RAM", "Grad-FAM", "Decomposition", "RAM (support)"]
    fig = compare_methods(images, boxes, [0, 1], [2, 3], {n: None if n == "Decomposition" else out for n in names})
    try:
        assert fig.get_size_inches()[0] <= COLUMN_INCHES + 1e-9
        bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert len(bars) == 1
        panels = [ax for ax in fig.axes if ax not in bars]
        assert len(panels) == 4 * 7
        titles = {ax.get_title().replace("\n", " "): ax.title.get_fontsize() for ax in panels[1:7]}
        assert titles == {n: 10 for n in names}
        assert [ax.get_ylabel() for ax in panels[::7]] == ["query", "support", "query", "support"]
        assert [t.get_text() for t in panels[5].texts] == ["—"]          # not applicable: a dash, no map
    finally:
        plt.close(fig)


def test_label_row_writes_beside_a_picture_without_ticks_or_frame():
    """overlay turns the axis off, which would hide a y label: label_row shows the label at 10 pt (or as asked) and
    nothing else of the axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from sfam_lite.plotting import label_row, overlay
    fig, (plain, labelled) = plt.subplots(1, 2)
    try:
        for ax in (plain, labelled):
            overlay(ax, torch.rand(3, 8, 8))
        label_row(labelled, "GPW\nsupport A")
        assert not plain.axison and plain.get_ylabel() == ""
        assert labelled.axison and labelled.get_ylabel() == "GPW\nsupport A"
        assert labelled.yaxis.label.get_fontsize() == 10 and labelled.yaxis.label.get_visible()
        assert list(labelled.get_xticks()) == [] and list(labelled.get_yticks()) == []
        assert not any(spine.get_visible() for spine in labelled.spines.values())
        label_row(plain, "SFAM", rotation=0, fontsize=9)
        assert plain.yaxis.label.get_rotation() == 0 and plain.yaxis.label.get_fontsize() == 9
    finally:
        plt.close(fig)
