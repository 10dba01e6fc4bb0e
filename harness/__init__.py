"""What the tests and the benchmarks both drive the product with: a real gunicorn on a free
port (servers), a closed-loop load generator (load), a hostile-input corpus with a raw HTTP
client (hostile), generated images (images) and a learner exported the way a fastai notebook
does it (notebook). Nothing here downloads anything or listens beyond loopback."""
