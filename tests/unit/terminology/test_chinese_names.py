"""Names folded and read as the matching compares them."""

from __future__ import annotations

from terminology.chinese_names import fold, full_name, names_of, reading


def test_one_name_written_many_ways_reads_the_same() -> None:
    variants = ["张三", "张 三", " 张三 ", "Zhang San", "zhang  san", "ＺＨＡＮＧ ＳＡＮ", "張三"]
    assert {reading(v) for v in variants} == {"zhangsan"}
    assert fold("张 三") == fold("张三") == "张三"
    assert fold("Zhang  San") == "zhang san"  # spaces between Latin words stay (one)


def test_full_names_in_chinese_and_latin_order() -> None:
    assert full_name({"family": "李", "given": ["秀兰"]}) == "李秀兰"
    assert full_name({"family": "Li", "given": ["Xiu", "Lan"]}) == "Li Xiu Lan"
    assert full_name({"text": " 李秀兰 ", "family": "X"}) == "李秀兰"
    assert names_of({"name": [{"text": "李秀兰"}, {"family": "Li", "given": ["Xiulan"]}, {}, 5]}) == [
        "李秀兰",
        "Li Xiulan",
    ]
    assert names_of({"name": "李秀兰"}) == []
