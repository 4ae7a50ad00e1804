"""Off-site DR: copies of recovery points at other sites, and recovering a whole site from them.

* ``plan``    which points go to which site and when; which copies a site keeps (pure)
* ``copy``    ``drsvc copy``: sealed objects from the cold tier to a site, resumable, verified
* ``prune``   each site's own retention and GC; locks at one site never touched from another
* ``verify``  ``drsvc verify --site NAME``
* ``recover`` ``drsvc site recover`` and ``site drill``: a catalog from a site's store, then every
  desktop restored in priority order with admission control (``drsvc.storm``)
"""
