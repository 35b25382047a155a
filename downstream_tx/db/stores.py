"""Every store over one database: what the services are given instead of SQL."""

from __future__ import annotations

from downstream_tx.db.archive import ArchiveStore
from downstream_tx.db.challenges import ChallengeStore
from downstream_tx.db.contracts import ContractStore
from downstream_tx.db.database import Database
from downstream_tx.db.downloads import DownloadStore
from downstream_tx.db.farmers import FarmerStore
from downstream_tx.db.files import FileStore
from downstream_tx.db.history import HistoryStore
from downstream_tx.db.lease import LeaseStore
from downstream_tx.db.meta import MetaStore
from downstream_tx.db.outcomes import OutcomeStore
from downstream_tx.db.overview import OverviewStore
from downstream_tx.db.ratelimits import RateLimitStore
from downstream_tx.db.reputation import ReputationStore
from downstream_tx.db.seeded import SeededStore
from downstream_tx.db.stats import StatsStore
from downstream_tx.db.status import StatusStore
from downstream_tx.db.tokens import TokenStore
from downstream_tx.domain.rules import Rules


class Stores:
    def __init__(self, db: Database, rules: Rules):
        """``rules``: the node's reputation settings, for every store that decides by them."""
        self.db = db
        self.meta = MetaStore(db)
        self.tokens = TokenStore(db, rules)
        self.farmers = FarmerStore(db)
        self.files = FileStore(db)
        self.challenges = ChallengeStore(db)
        self.contracts = ContractStore(db, rules)
        self.downloads = DownloadStore(db)
        self.seeded = SeededStore(db, rules)
        self.status = StatusStore(db)
        self.stats = StatsStore(db)
        self.history = HistoryStore(db)
        self.overview = OverviewStore(db)
        self.archive = ArchiveStore(db)
        self.reputation = ReputationStore(db, rules)
        self.leases = LeaseStore(db)
        self.ratelimits = RateLimitStore(db)
        self.outcomes = OutcomeStore(db)
