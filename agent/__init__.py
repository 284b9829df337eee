"""mailmib's SNMP agent: the pure MIB view (`agent.view`), its OID data (`agent.oids`), and the
pysnmp glue that serves the view to managers."""

__version__ = "0.1.0"
