"""Validation bounds are declared once: the dataclass, the form and the serializer read the same numbers."""

from __future__ import annotations

import pytest

from exports.api.serializers import ExportCreateSerializer
from exports.params import BOUNDS, ExportParams, InvalidParams
from rewardmodel.options import LORA_RANK_BOUNDS, OPTION_BOUNDS


@pytest.mark.django_db
def test_export_bounds_are_one_declaration():
    from frontend.views_dashboard import ExportForm
    from tests.factories import ProjectFactory

    form = ExportForm(project=ProjectFactory())
    serializer = ExportCreateSerializer()
    for name, (low, high) in BOUNDS.items():
        for fields in (form.fields, serializer.fields):
            if name in fields:
                assert (fields[name].min_value, fields[name].max_value) == (low, high), name
        with pytest.raises(InvalidParams, match=name):
            ExportParams(**{name: high * 2 + 1})


def test_training_bounds_are_one_declaration():
    from frontend.views_rewardmodel import TrainForm
    from rewardmodel.train import TrainConfig

    fields = TrainForm.base_fields
    shown = [name for name in OPTION_BOUNDS if name in fields]
    assert len(shown) >= 6
    for name in shown:
        assert (fields[name].min_value, fields[name].max_value) == OPTION_BOUNDS[name], name
    assert (fields["lora_r"].min_value, fields["lora_r"].max_value) == LORA_RANK_BOUNDS
    base = {"base_model": "b", "data_dir": "d", "output_dir": "o"}
    for name, (_low, high) in OPTION_BOUNDS.items():
        with pytest.raises(ValueError, match=name):
            TrainConfig.from_dict({**base, name: high * 2 + 1})
