"""wb-highlights: the Profile Insight Store & Freshness Manager."""
