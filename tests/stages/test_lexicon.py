"""The open vocabulary: the 80 COCO categories built in, a user lexicon file merged into it and
used by object_spatial, object_hallucination and the entailment metric, and CHAIR equal to the
reference definition (Rohrbach et al. 2018) on a COCO-style fixture."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.metrics.entailment import caption_claims
from stages.lexicon import DEFAULT_LEXICON, LexiconError, load_lexicon
from stages.lexicon_words import COCO_CATEGORIES
from stages.object_hallucination import ObjectHallucination, sample_chair
from stages.object_spatial import ObjectSpatial
from tests.stages.object_rows import object_record, object_table

COCO_80 = (
    "person bicycle car motorcycle airplane bus train truck boat|traffic light|fire hydrant|stop sign|"
    "parking meter|bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie "
    "suitcase frisbee skis snowboard|sports ball|kite|baseball bat|baseball glove|skateboard surfboard|"
    "tennis racket|bottle|wine glass|cup fork knife spoon bowl banana apple sandwich orange broccoli carrot|"
    "hot dog|pizza donut cake chair couch|potted plant|bed|dining table|toilet tv laptop mouse remote keyboard|"
    "cell phone|microwave oven toaster sink refrigerator book clock vase scissors|teddy bear|hair drier|toothbrush"
)


def coco_names() -> list[str]:
    return [n for part in COCO_80.split("|") for n in ([part] if " " in part.strip() and part.count(" ") == 1
                                                       and part in COCO_CATEGORIES else part.split())]


def test_the_80_coco_categories_synonyms_and_plurals_are_built_in() -> None:
    assert list(COCO_CATEGORIES) == coco_names() and len(COCO_CATEGORIES) == 80
    found = [(m.canonical, m.plural) for m in DEFAULT_LEXICON.find_object_mentions(
        "Two men on motorbikes pass a fire hydrant, three puppies, a fridge and some oranges.")]
    assert found == [("person", True), ("motorcycle", True), ("fire hydrant", False), ("dog", True),
                     ("refrigerator", False), ("orange", True)]
    # "orange" alone stays a colour: "an orange cat" is a cat with a colour
    mention, = DEFAULT_LEXICON.find_object_mentions("an orange cat")
    assert (mention.canonical, mention.modifiers) == ("cat", ("orange",))


def test_a_label_without_colour_does_not_contradict_a_coloured_mention() -> None:
    # COCO labels carry no colour: "a red car" is not a hallucination of box "car"
    assert sample_chair(None, ["A red car parked on a street."], ["car"]).hallucinated_mentions == 0
    assert sample_chair(None, ["A red circle."], ["blue circle"]).hallucinated_mentions == 1


def write_lexicon(tmp_path: Path) -> Path:
    path = tmp_path / "road.yaml"
    path.write_text(
        "objects:\n  traffic cone: [cone, pylon]\n  pothole: []\n  car: [hatchback]\n"
        "colours: [amber]\nattributes: [dented]\nplurals: {pylon: pylons}\n"
        "relations:\n  anterior to: front\n  superior to: above\n")
    return path


def test_a_user_lexicon_adds_objects_colours_and_relations(tmp_path: Path) -> None:
    lexicon = load_lexicon(str(write_lexicon(tmp_path)))
    m1, m2 = lexicon.find_object_mentions("a dented amber pylon beside two potholes")
    assert (m1.canonical, m1.modifiers) == ("traffic cone", ("dented", "amber"))
    assert (m2.canonical, m2.plural) == ("pothole", True)
    assert lexicon.canonical_object("hatchback") == "car" and "automobile" in lexicon.objects["car"]
    assert DEFAULT_LEXICON.find_object_mentions("a pylon") == []  # the built-in lexicon is untouched
    match = lexicon.relative_re.search("the cone superior to the car")
    assert match is not None and lexicon.relative_relation(match) == "above"
    claims = caption_claims("an amber cone", lexicon)
    assert claims.colours == {"traffic cone": frozenset({"amber"})}


def test_bad_lexicon_files_name_the_file_and_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("objects: {cone: 3}\n")
    with pytest.raises(LexiconError, match=r"bad.yaml: objects.cone: expected a list of words"):
        load_lexicon(str(bad))
    bad.write_text("relations: {beside: near}\n")
    with pytest.raises(LexiconError, match=r"relations.beside: 'near' is not one of"):
        load_lexicon(str(bad))
    bad.write_text("synonyms: {}\n")
    with pytest.raises(LexiconError, match=r"unknown key\(s\) \['synonyms'\]"):
        load_lexicon(str(bad))
    with pytest.raises(ValidationError, match="lexicon"):
        ObjectHallucination({"lexicon": str(tmp_path / "missing.yaml")})


def test_the_object_stages_use_the_user_lexicon(tmp_path: Path) -> None:
    lexicon = str(write_lexicon(tmp_path))
    rows = object_table([
        object_record(tmp_path, "cone-halluc", [("car", [20, 40, 90, 110], "pascal_voc")],
                      "A car and a pylon."),
        object_record(tmp_path, "cone-flip", [("car", [20, 120, 90, 180], "pascal_voc"),
                                              ("traffic cone", [150, 10, 200, 60], "pascal_voc")],
                      "The car superior to the cone."),
    ], tmp_path)
    default = ObjectHallucination()(rows)
    assert default["status"].to_pylist() == ["ok", "ok"]  # "pylon" is no object without the lexicon
    user = ObjectHallucination({"lexicon": lexicon})(rows)
    assert user["status"].to_pylist()[0] == "rejected" and "'pylon'" in user["reject_detail"][0].as_py()
    spatial = ObjectSpatial({"lexicon": lexicon})(rows)
    assert spatial["reject_code"].to_pylist()[1] == "ERR_CROSS_MDL_OBJ_FLIP"
    assert ObjectSpatial()(rows)["status"].to_pylist()[1] == "ok"  # no relation word without it


# ---- CHAIR against the reference definition --------------------------------------------------
# Rohrbach et al. 2018 (utils/chair.py): lower-case words, singularised; pairs of words that name
# one COCO object merged; each word mapped through the synonym table to its category (node word);
# CHAIR-i = mentions whose category is not among the image's annotated categories / all mentions,
# CHAIR-s = captions with at least one such mention / all captions. The table below holds the
# synonyms this fixture uses, written out independently of stages.lexicon_words.
REFERENCE_SYNONYMS = """person, man, woman, boy, girl, child, people, player
dog, puppy
cat, kitten
car, automobile
bicycle, bike
traffic light, traffic signal
dining table, table
cup, mug
cell phone, phone
laptop
sports ball, ball
couch, sofa
frisbee"""
IRREGULAR_SINGULARS = {"men": "man", "women": "woman", "children": "child", "people": "people",
                       "puppies": "puppy"}


def _singular(word: str) -> str:
    if word in IRREGULAR_SINGULARS:
        return IRREGULAR_SINGULARS[word]
    if word.endswith("ies"):
        return word[:-3] + "y"
    if re.search(r"(ses|xes|ches|shes)$", word):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def reference_chair(images: dict[int, list[str]], captions: list[tuple[int, str]]) -> tuple[float, float]:
    node = {s: line.split(", ")[0] for line in REFERENCE_SYNONYMS.splitlines() for s in line.split(", ")}
    doubles = {w for w in node if " " in w}
    mentions = hallucinated = bad_caps = 0
    for image_id, caption in captions:
        words = [_singular(w) for w in re.findall(r"[a-z]+", caption.lower())]
        merged, i = [], 0
        while i < len(words):
            pair = " ".join(words[i:i + 2])
            merged.append(pair if pair in doubles else words[i])
            i += 2 if pair in doubles else 1
        objects = [node[w] for w in merged if w in node]
        truth = {node[c] for c in images[image_id]}
        misses = sum(o not in truth for o in objects)
        mentions += len(objects)
        hallucinated += misses
        bad_caps += misses > 0
    return hallucinated / mentions, bad_caps / len(captions)


def test_chair_equals_the_reference_definition_on_coco_style_annotations() -> None:
    images = {1: ["person", "dog"], 2: ["car", "traffic light"], 3: ["dining table", "cup", "cell phone"],
              4: ["sports ball", "person"], 5: ["couch", "cat"]}
    captions = [
        (1, "A man walking two dogs down the street."), (1, "A woman with her puppy and a cat."),
        (2, "Cars stopped at a traffic light."), (2, "A bicycle leaning on a car near traffic signals."),
        (3, "A table with cups and a phone on it."), (3, "A laptop on a table next to a mug."),
        (4, "Boys playing with a ball on the grass."), (4, "A dog chasing a ball while children watch."),
        (5, "A kitten asleep on a sofa."), (5, "Two cats and a frisbee on the couch."),
    ]
    ref_i, ref_s = reference_chair(images, captions)
    total_mentions = total_bad = caps = bad_caps = 0
    for image_id, labels in images.items():
        counts = sample_chair(None, [c for i, c in captions if i == image_id], labels, match_colours=False)
        total_mentions += counts.mentions
        total_bad += counts.hallucinated_mentions
        caps += counts.captions
        bad_caps += counts.hallucinated_captions
    assert (total_bad / total_mentions, bad_caps / caps) == (ref_i, ref_s)
    assert (ref_i, ref_s) == (5 / 26, 5 / 10)  # cat, bicycle, laptop, dog, frisbee: one caption each
