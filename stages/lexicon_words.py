"""The built-in vocabulary of the object stages: object names with their synonyms, colours,
attribute words, irregular plurals, negations.

Objects are the sample world's shapes, the 80 COCO categories (their names as COCO spells them,
with the synonyms captions use for them: "bike" is a bicycle, "puppy" a dog, "sofa" a couch),
and a few medical findings. Two-word names are matched before one-word names. Colour words are
not object names: "orange" is a colour, so the COCO fruit is only recognised in the plural
("oranges") or as "tangerine"/"mandarin". A user lexicon (``stages.lexicon.load_lexicon``) adds
to all of this; nothing here reads a file.
"""

from __future__ import annotations

COLOURS: frozenset[str] = frozenset(
    "red green blue yellow orange purple violet pink brown black white grey gray cyan magenta"
    " teal gold golden silver beige navy maroon olive".split()
)
# Adjectives that may stand between a determiner and an object name ("the small red circle").
ATTRIBUTES: frozenset[str] = frozenset(
    "small large big tiny huge little bright dark light pale striped dotted solid hollow filled"
    " outlined round".split()
)
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("disc", "disk", "dot"), "square": (), "rectangle": ("oblong",), "triangle": (),
    "star": (), "ellipse": ("oval",), "hexagon": (), "pentagon": (), "diamond": ("rhombus",),
    "cross": (), "heart": (),
}
# The 80 COCO categories in COCO's order, each with the synonyms captions use for it.
COCO_CATEGORIES: dict[str, tuple[str, ...]] = {
    "person": ("man", "woman", "child", "boy", "girl", "people", "pedestrian", "kid", "adult", "baby",
               "lady", "guy", "player", "rider", "skier", "surfer", "skateboarder", "snowboarder"),
    "bicycle": ("bike",), "car": ("automobile", "sedan", "taxi", "suv", "van"),
    "motorcycle": ("motorbike", "scooter", "moped"),
    "airplane": ("plane", "aeroplane", "jet", "aircraft", "airliner"), "bus": ("minibus",),
    "train": ("locomotive", "tram"), "truck": ("lorry", "pickup truck"),
    "boat": ("ship", "sailboat", "canoe", "kayak", "yacht"),
    "traffic light": ("traffic signal", "stoplight", "stop light"), "fire hydrant": ("hydrant",),
    "stop sign": (), "parking meter": (), "bench": (),
    "bird": ("pigeon", "seagull", "gull", "duck", "parrot", "goose"), "cat": ("kitten", "kitty"),
    "dog": ("puppy", "pup"), "horse": ("pony", "foal"), "sheep": ("lamb", "ram"),
    "cow": ("cattle", "calf", "bull", "ox"), "elephant": (), "bear": ("polar bear", "panda"),
    "zebra": (), "giraffe": (), "backpack": ("rucksack", "knapsack"), "umbrella": ("parasol",),
    "handbag": ("purse",), "tie": ("necktie", "bow tie"), "suitcase": ("luggage",),
    "frisbee": (), "skis": ("ski",), "snowboard": (),
    "sports ball": ("ball", "football", "baseball", "soccer ball", "tennis ball", "basketball"),
    "kite": (), "baseball bat": (), "baseball glove": ("baseball mitt",), "skateboard": (),
    "surfboard": (), "tennis racket": ("racket", "racquet"), "bottle": (),
    "wine glass": ("wineglass",), "cup": ("mug",), "fork": (), "knife": (), "spoon": (),
    "bowl": (), "banana": (), "apple": (), "sandwich": ("burger", "hamburger"),
    "orange": ("tangerine", "mandarin"), "broccoli": (), "carrot": (), "hot dog": ("hotdog",),
    "pizza": (), "donut": ("doughnut",), "cake": ("cupcake",), "chair": ("stool",),
    "couch": ("sofa",), "potted plant": ("houseplant", "plant"), "bed": (),
    "dining table": ("table",), "toilet": (), "tv": ("television",),
    "laptop": ("notebook computer",), "mouse": ("computer mouse",), "remote": ("remote control",),
    "keyboard": (), "cell phone": ("phone", "smartphone", "mobile phone", "cellphone"),
    "microwave": (), "oven": ("stove",), "toaster": (), "sink": (), "refrigerator": ("fridge",),
    "book": (), "clock": (), "vase": (), "scissors": (), "teddy bear": ("teddy",),
    "hair drier": ("hair dryer", "hairdryer"), "toothbrush": (),
}
MEDICAL: dict[str, tuple[str, ...]] = {"lesion": (), "nodule": (), "fracture": (), "mass": ()}
OBJECT_SYNONYMS: dict[str, tuple[str, ...]] = {**SHAPES, **COCO_CATEGORIES, **MEDICAL}
# Names whose singular is a colour or another common word: only their plural is an object.
PLURAL_ONLY: frozenset[str] = frozenset({"orange"})
IRREGULAR_PLURALS: dict[str, str] = {
    "man": "men", "woman": "women", "child": "children", "person": "persons",
    "sheep": "sheep", "cattle": "cattle", "people": "people", "mouse": "mice", "knife": "knives",
    "luggage": "luggage", "skis": "skis", "scissors": "scissors", "broccoli": "broccoli",
    "ox": "oxen", "calf": "calves", "foal": "foals", "bus": "buses", "tv": "tvs",
}
# Singular forms that already mean several things ("people", "cattle").
COLLECTIVE: frozenset[str] = frozenset({"people", "cattle"})
NEGATIONS: frozenset[str] = frozenset({"no", "not", "without", "nor", "never"})
