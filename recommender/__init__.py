"""Image recommendation and deduplication core library.

Everything that touches models, Qdrant or the catalog lives here so that the
Prefect flows (`flows/`) and the Streamlit dashboard (`dashboard/`) stay thin.
"""

__version__ = "0.1.0"
