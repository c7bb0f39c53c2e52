"""InstanceFCN against the proposal generators users would pick instead, trained and scored in
one run on the same data, backbone, ImageNet start and number of images seen
(``python tools/peer_comparison.py``; see its docstring).

Modules: ``sides`` (the models compared: config, learning rates swept, the AR that chooses),
``training`` (train then score one side in this process; detectron2's trainer with a
class-agnostic data mapper for the peers), ``cli`` (command line, sweep, full runs, the results
file).
"""
