"""A small English corpus written for compfair: the `builtin` training/calibration text.

Deliberately *not* the evaluation prompts in `data/prompts/` (toxicity, BOLD, perplexity):
training or calibrating on the texts a model is later scored on would leak the evaluation into
the compressed model. Neutral, varied prose; about 2,000 words, so calibration sets larger than
that cycle through it (the data layer logs when it does)."""

from __future__ import annotations

PARAGRAPHS: tuple[str, ...] = (
    "The river rises in the hills to the north and runs for about two hundred kilometres before "
    "it reaches the sea. For most of its length it is slow and wide, and in summer the water is "
    "so low that children can wade across it near the old mill. In spring, when the snow melts, "
    "it can flood the fields on both banks within a single night.",
    "Bread is one of the oldest prepared foods. A simple loaf needs only flour, water, salt and "
    "yeast, but the way these are mixed, rested and baked changes the result a great deal. A long, "
    "cool rise gives the dough time to develop flavour, while a hot oven with a little steam "
    "produces a crisp, dark crust.",
    "The library opened in the autumn of its first year with fewer than a thousand books, most of "
    "them donated by families in the town. Within a decade it had outgrown its single room, and a "
    "new building was raised on the corner of the market square, with tall windows that let the "
    "afternoon light fall across the reading tables.",
    "Light travels from the sun to the earth in a little over eight minutes. When it enters the "
    "atmosphere, the shorter blue wavelengths are scattered more strongly than the red ones, which "
    "is why the sky looks blue during the day and why sunsets, seen through more air, turn orange "
    "and red.",
    "A good map leaves things out. If every tree, stone and footpath were drawn, the page would be "
    "unreadable, so the map maker decides what matters for the reader: roads for a driver, contour "
    "lines for a walker, depths and lights for a sailor. Every map is an argument about what is "
    "worth seeing.",
    "The committee met on Tuesday to discuss the budget for the coming year. After a long debate, "
    "the members agreed to repair the roof of the community hall before starting any new projects, "
    "since the winter rains had already damaged part of the ceiling and the floor beneath it.",
    "Bees communicate the location of flowers through a movement known as the waggle dance. The "
    "angle of the dance relative to the vertical comb tells the other bees the direction of the "
    "food relative to the sun, and the length of the waggle run tells them roughly how far they "
    "will have to fly.",
    "Learning a musical instrument takes patience. At first the fingers feel clumsy and the sounds "
    "are thin, but daily practice, even for a short time, slowly builds the small movements into "
    "habits. After some months a player no longer thinks about each note and can begin to think "
    "about the music itself.",
    "The train left the station a few minutes late and climbed slowly through the valley. Outside "
    "the window the farms gave way to forest, and then to bare rock as the line wound higher. Most "
    "of the passengers were asleep by the time it crossed the long bridge above the gorge.",
    "Computers store numbers in binary, using only the digits zero and one. A group of eight such "
    "digits is called a byte and can represent any whole number from zero to two hundred and "
    "fifty-five. Larger numbers, letters, images and sounds are all built from many bytes arranged "
    "according to agreed formats.",
    "In the old harbour, fishing boats still come in before dawn to unload their catch. Buyers from "
    "the restaurants walk along the quay inspecting the boxes of fish on ice, and by the time the "
    "cafes open for breakfast most of the morning's trade is already done.",
    "The weather forecast for the weekend is mixed. Saturday should begin dry and bright, with "
    "clouds building in the afternoon and a chance of showers in the west. On Sunday a band of rain "
    "will cross the region from the south, clearing by the evening to leave a cold, clear night.",
    "Gardeners often rotate their crops from one bed to another each year. Plants of the same "
    "family tend to take the same nutrients from the soil and to suffer from the same pests, so "
    "moving them around keeps the ground healthier and reduces the need for fertiliser and sprays.",
    "The museum's new exhibition brings together tools, clothing and letters from the early years "
    "of the railway. Visitors can see a signal box rebuilt piece by piece, read the notebooks kept "
    "by the engineers, and listen to recordings of people who remembered the first trains arriving "
    "in their villages.",
    "Water boils at a lower temperature on a high mountain than at sea level, because the air "
    "pressure is lower. Climbers cooking at altitude find that pasta and rice take much longer to "
    "soften, and some carry pressure cookers to raise the boiling point back towards normal.",
    "She opened the letter carefully, as if it might break. It was short, only a few lines in a "
    "neat, slanting hand, but she read it three times before folding it again and putting it back "
    "in its envelope. Then she stood by the window for a long while, watching the street below.",
    "A bridge must carry not only its own weight and the traffic that crosses it, but also the "
    "force of the wind and, in some places, the movement of the ground during an earthquake. "
    "Engineers test their designs with models and calculations long before the first stone or "
    "steel beam is put in place.",
    "The recipe calls for two cups of flour, one cup of milk, two eggs and a pinch of salt. Whisk "
    "the eggs and milk together, add the flour a little at a time, and let the batter rest for half "
    "an hour. Cook the pancakes in a hot pan with a small amount of butter, turning them once.",
    "Most stars we see at night are much larger than the sun, but they are so far away that they "
    "appear as points of light. The nearest star beyond the sun is about four light years away, "
    "which means the light reaching us tonight left it more than four years ago.",
    "The school introduced a reading hour every Friday afternoon. Pupils could choose any book from "
    "the shelves, or bring one from home, and the only rule was that everyone, teachers included, "
    "had to read quietly for the whole hour. After a term, borrowing from the library had doubled.",
    "Markets in the old part of the city open early. Stalls sell vegetables, cheese, bread, "
    "flowers, secondhand books and kitchen tools, and the sellers call out their prices over the "
    "noise of the crowd. By noon the square is nearly empty again, swept clean for the evening.",
    "A spreadsheet is a grid of cells, each holding a number, a piece of text or a formula. When "
    "one value changes, every formula that depends on it is recalculated at once, which makes the "
    "spreadsheet a convenient tool for budgets, schedules and quick what-if questions.",
    "The path along the cliffs is narrow in places and can be slippery after rain. Walkers are "
    "advised to wear sturdy boots, to carry water and a map, and to check the times of the tides "
    "before going down to the beaches, which can be cut off when the sea comes in.",
    "Clocks were once set by the position of the sun, so every town kept its own local time. When "
    "railways began to run fast trains between distant cities, this became confusing, and "
    "countries agreed on standard time zones so that timetables could be printed and understood.",
    "The old house had been empty for years. Ivy covered most of the front wall, several windows "
    "were broken, and the garden had turned into a small wood. The new owners spent their first "
    "summer clearing the rooms and repairing the roof before they could even think about painting.",
    "Paper is made from plant fibres that are soaked, beaten into a pulp, spread thinly over a "
    "screen and dried. Early paper makers used rags and bark; modern mills mostly use wood, and a "
    "growing share of paper is now made again from recycled paper and cardboard.",
    "On clear winter mornings the lake freezes at the edges, and a thin layer of mist hangs over "
    "the open water in the middle. Ducks gather where the ice ends, and the footprints of foxes "
    "can be seen crossing the snow on the shore from the woods to the reeds.",
    "A short walk every day is one of the simplest ways to stay healthy. It strengthens the heart "
    "and muscles, helps with sleep, and gives the mind a break from screens and work. Many people "
    "find that ideas come more easily while walking than while sitting at a desk.",
)


def builtin_texts() -> list[str]:
    """The builtin paragraphs, in a fixed order."""
    return list(PARAGRAPHS)
