"""Output and input heads: seg projector, SAM mask head, box codecs, region encoder, video trackers.

``heads`` never imports ``grounding``.
"""
