"""Every kind of odd, broken or hostile file in tests/photo_corpus.py, through read_photo and the app's upload handler.

Accepted files must come out as the right picture (right frame, layer, orientation,
colours); refused ones must be refused with a plain sentence that says what is
wrong and what to do, naming no library internals. The app takes the uploaded
file as it is, with nothing decoded by Gradio first, so it must answer exactly as
read_photo does.
"""

import re
import types

import numpy as np
import pytest
from photo_corpus import corpus, plain_sentence_problems

import app
from inversion import PhotoError, read_photo
from inversion.photo import MAX_FILE_BYTES

CORPUS = corpus()
IDS = [s.kind for s in CORPUS]


def test_the_corpus_covers_what_the_issue_asks_for():
    kinds = set(IDS)
    assert len(kinds) == len(CORPUS) >= 30
    for required in ("psd_layered", "gif_animated", "tiff_multipage", "dds_dxt1", "dds_unknown_fourcc",
                     "dds_dx10_float16", "tiff_cmyk", "jpeg_cmyk", "png_16bit_rgb", "tiff_float32",
                     "png_palette_transparency", "png_bomb_42mp", "truncated_jpeg", "png_named_jpg", "zero_bytes",
                     "text_as_png", "png_huge_header"):
        assert required in kinds
    assert {f"jpeg_exif_orientation_{o}" for o in range(1, 9)} <= kinds
    assert sum(s.accept for s in CORPUS) >= 15 and sum(not s.accept for s in CORPUS) >= 15


@pytest.mark.parametrize("sample", CORPUS, ids=IDS)
def test_read_photo(sample, tmp_path):
    path = tmp_path / sample.filename
    path.write_bytes(sample.data)
    if sample.accept:
        photo = read_photo(path)
        assert photo.image.mode == "RGB"
        sample.check(np.asarray(photo.image))
        assert np.array_equal(np.asarray(read_photo(sample.data).image), np.asarray(photo.image))  # bytes too
    else:
        with pytest.raises(PhotoError) as refused:
            read_photo(path)
        message = str(refused.value)
        assert not plain_sentence_problems(message), (message, plain_sentence_problems(message))
        assert sample.words and re.search(sample.words, message, re.IGNORECASE), message
        assert str(tmp_path) not in message                              # never a server path


# --------------------------------------------------------------------------- through the app


@pytest.fixture(scope="module")
def studio(tiny_model_dir, tmp_path_factory):
    demo = app.build_app({"tiny": str(tiny_model_dir)}, "tiny", "cpu", autocast=False,
                         store=app.SessionStore(export_root=tmp_path_factory.mktemp("exports")))
    return demo.studio


@pytest.mark.parametrize("sample", CORPUS, ids=IDS)
def test_the_apps_upload_handler(sample, studio, messages, tmp_path):
    """The handler the upload box calls: a preview of what read_photo made, or its refusal, shown plainly."""
    req = types.SimpleNamespace(session_hash=f"corpus-{sample.kind}")
    path = tmp_path / sample.filename
    path.write_bytes(sample.data)
    out = studio.upload_photo(str(path), req)
    ui = studio.ui
    note = out[ui["photo_note"]]
    if sample.accept:
        preview = out[ui["photo_preview"]]
        assert preview["visible"]
        sample.check(np.asarray(preview["value"]))
        assert "Press **Invert photo**" in note
        assert not [m for m in messages if m[0] == "warning"]
    else:
        assert out[ui["photo_preview"]] == {"value": None, "visible": False, "__type__": "update"}
        expected = str(pytest.raises(PhotoError, read_photo, sample.data).value)
        assert messages == [("warning", f"That file cannot be used: {expected}")]
        assert expected in note and not plain_sentence_problems(expected)


def test_the_app_limits_uploads_as_read_photo_does():
    """The same byte limit at the door (Gradio refuses larger uploads before storing them) as in read_photo."""
    assert app.launch_options()["max_file_size"] == MAX_FILE_BYTES
