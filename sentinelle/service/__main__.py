"""`python -m sentinelle.service`: run the service, or a decode worker."""

from sentinelle.service import main

main()
