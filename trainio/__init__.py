"""What every trainer (reward model, SFT, PPO) shares: checkpoint files, config checks, device and seeds. No Django.

A package of its own so that neither trainer app imports the other for it: ``rewardmodel``
and ``rlloop`` both import ``trainio``, and ``trainio`` imports neither (nor ``arpad``,
whose ``__init__`` starts Celery and so Django).
"""
