import tensorflow as tf

vocab_size, hidden = 10000, 200
inputs = tf.placeholder(tf.int32, [None, 35])
targets = tf.placeholder(tf.int32, [None, 35])
lengths = tf.placeholder(tf.int32, [None])
embedding = tf.get_variable("embedding", [vocab_size, hidden])
emb = tf.nn.embedding_lookup(embedding, inputs)
cell = tf.nn.rnn_cell.BasicLSTMCell(hidden)
outputs, _ = tf.nn.dynamic_rnn(cell, emb, sequence_length=lengths, dtype=tf.float32)
softmax_w = tf.get_variable("softmax_w", [hidden, vocab_size])
logits = tf.tensordot(outputs, softmax_w, axes=1)
probs = tf.nn.softmax(logits)
onehot = tf.one_hot(targets, vocab_size)
mask = tf.sequence_mask(lengths, 35, dtype=tf.float32)
token_loss = -tf.reduce_sum(onehot * tf.log(probs), axis=2)  # BUG
loss = tf.reduce_sum(token_loss * mask) / tf.reduce_sum(mask)  # BUG
