"""An ECR authorization token, as the controller holds it. Pure: no I/O; the password is never in a repr."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Token:
    username: str
    password: str = field(repr=False)
    expires_at: datetime.datetime
    fetched_at: datetime.datetime
    # The registry API this token is for (https://<account>.dkr.ecr.<region>.amazonaws.com).
    endpoint: str = ""

    def refresh_at(self, floor: datetime.timedelta) -> datetime.datetime:
        """Half-way through the token's life, but never sooner than `floor` after it was fetched.

        The floor matters when `expiresAt` is already past (moto returns one from
        2015): without it the controller would fetch tokens in a hot loop.
        """
        half_life = self.fetched_at + (self.expires_at - self.fetched_at) / 2
        return max(half_life, self.fetched_at + floor)

    def valid(self, now: datetime.datetime) -> bool:
        return now < self.expires_at
