"""The lab's dashboard at ``/``: server-rendered pages whose content refreshes in place, with every
asset (CSS, JS, the OpenAPI page's Swagger UI) served by this server, so it works offline."""
